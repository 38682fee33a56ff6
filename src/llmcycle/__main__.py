from llmcycle.cli import main

main()
