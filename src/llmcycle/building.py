"""One lock for building models: every llmcycle call that constructs a model (from a config, a checkpoint, a GGUF
file, or by wrapping one with an adapter) holds `BUILD_LOCK` while it does.

Why: transformers builds a model inside context managers that patch process globals and put them back on exit
(`PreTrainedModel.tie_weights` becomes a no-op while weights load, `torch.linspace` is wrapped, the default dtype
is set to the load dtype). Two threads building at once interleave those saves and restores: one thread saves the
other's patch as "the original" and restores it last, so the no-op `tie_weights` stays for the rest of the process.
Every later model with tied embeddings then keeps a separate, random (or meta-device) output head, and a model
built during another's load gets its patches. One process does build on several threads: `serve --watch` loads the
promoted model on its watcher thread, and concurrent `improve` runs (or a server and a run) share a process.

Re-entrant, so a function holding it may call another that takes it (loading a base, then its adapter).
"""

from __future__ import annotations

import threading

BUILD_LOCK = threading.RLock()
