"""The terminal chat: a read-reply loop over the engine with memory and slash commands.

On a terminal it prompts (with readline line editing); with piped stdin it prints one reply per input line and
nothing else on stdout (command messages go to stderr; line breaks inside a reply are written as \\n), so it
can be scripted. No command error ends a session.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from llmcycle.errors import UserError
from llmcycle.infer.context import prompt_budget
from llmcycle.infer.memory import ChatMemory
from llmcycle.infer.settings import KNOBS, GenerationSettings

USER_PROMPT = "you> "
BOT_PROMPT = "bot> "
HELP = """commands:
  /set KNOB VALUE   change a decoding knob (see /show); lists are comma separated, 'none' unsets
  /show             show the decoding knobs
  /reset            forget the conversation (keeps the system message)
  /history          show the conversation so far
  /save FILE        append the conversation to FILE as a chat record (one JSON line)
  /system TEXT      set the system message ('/system' alone removes it)
  /help             this help
  /quit             leave (also Ctrl-D)"""


class ChatSession:
    """State of one chat: engine, knobs and memory. `handle(line)` returns False when the session should end."""

    def __init__(self, engine: Any, settings: GenerationSettings, system: str | None = None,
                 max_turns: int | None = None, out: TextIO = sys.stdout, info: TextIO | None = None,
                 interactive: bool = False, model_name: str = ""):
        self.engine, self.settings = engine, settings
        self.memory = ChatMemory(system=system or None, max_turns=max_turns)
        self.out, self.info_out = out, info or out
        self.interactive, self.model_name = interactive, model_name

    def info(self, message: str) -> None:
        print(message, file=self.info_out, flush=True)

    def handle(self, line: str) -> bool:
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            try:
                return self.command(line)
            except UserError as exc:
                self.info(f"error: {exc}")
                return True
        try:
            self.reply(line)
        except UserError as exc:
            self.info(f"error: {exc}")
        return True

    def reply(self, text: str) -> str:
        """Stream the assistant's answer to `text` and remember the turn."""
        budget = prompt_budget(self.engine.context_length, self.settings.max_new_tokens)
        messages = self.memory.window(text, lambda m: len(self.engine.encode_chat(m)), budget)
        pieces: list[str] = []
        if self.interactive:
            self.out.write(BOT_PROMPT)
        try:
            for piece in self.engine.stream_chat(messages, self.settings):
                pieces.append(piece)
                # piped output keeps one line per reply: line breaks inside a reply are written escaped
                self.out.write(piece if self.interactive else piece.replace("\r", "\\r").replace("\n", "\\n"))
                self.out.flush()
        except KeyboardInterrupt:
            self.out.write(" [interrupted]")
        self.out.write("\n")
        self.out.flush()
        answer = "".join(pieces)
        if answer.strip():  # an empty reply is not remembered: saved transcripts stay valid chat records
            self.memory.add(text, answer)
        elif self.interactive:
            self.info("(the model ended its turn without a reply)")
        return answer

    def command(self, line: str) -> bool:
        name, _, arg = line[1:].partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            self.info(f"unknown command /{name} (try /help)")
            return True
        handler(arg)
        return True

    def cmd_help(self, arg: str) -> None:
        self.info(HELP)

    def cmd_set(self, arg: str) -> None:
        knob, _, value = arg.partition(" ")
        if not knob:
            self.info("usage: /set KNOB VALUE (knobs: " + ", ".join(KNOBS) + ")")
            return
        self.settings = self.settings.with_text_value(knob, value)
        self.info(f"{knob} = {getattr(self.settings, knob)!r}")

    def cmd_show(self, arg: str) -> None:
        for knob, (_, help_text) in KNOBS.items():
            self.info(f"  {knob:22} {getattr(self.settings, knob)!r:12}  {help_text}")
        self.info(f"  (system: {self.memory.system!r}; max_turns: {self.memory.max_turns})")

    def cmd_reset(self, arg: str) -> None:
        self.memory.reset()
        self.info("conversation forgotten")

    def cmd_history(self, arg: str) -> None:
        messages = self.memory.transcript()
        if not messages:
            self.info("(no conversation yet)")
        for message in messages:
            self.info(f"[{message['role']}] {message['content']}")

    def cmd_system(self, arg: str) -> None:
        self.memory.system = arg or None
        self.info(f"system message {'set' if arg else 'removed'}")

    def cmd_save(self, arg: str) -> None:
        if not arg:
            self.info("usage: /save FILE")
            return
        record = {"messages": self.memory.transcript(),
                  "meta": {"source": "llmcycle chat", "model": self.model_name,
                           "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "settings": self.settings.to_dict()}}
        path = Path(arg).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.info(f"error: cannot write {path}: {exc.strerror}")
            return
        self.info(f"saved {len(record['messages'])} messages to {path}")


def read_line(interactive: bool, stdin: TextIO) -> str | None:
    """The next input line, or None at end of input (Ctrl-D)."""
    if interactive:
        try:
            return input(USER_PROMPT)
        except EOFError:
            print(file=sys.stdout)
            return None
    line = stdin.readline()
    return None if line == "" else line


def run_chat(session: ChatSession, stdin: TextIO = sys.stdin) -> None:
    """The read-reply loop until /quit, end of input or Ctrl-C at the prompt."""
    interactive = session.interactive
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:  # pragma: no cover - platforms without readline
            pass
        session.info(f"chatting with {session.model_name or 'the model'} "
                     f"({session.engine.backend_name} decoding); /help for commands, /quit to leave")
    while True:
        try:
            line = read_line(interactive, stdin)
        except KeyboardInterrupt:
            print(file=sys.stdout)
            return
        if line is None or not session.handle(line):
            return
