"""Training stages (pretrain, finetune) on one shared loop (`loop.py`)."""
