"""User feedback: the server stores it (`store.py`); the data stage turns it into preference records."""
