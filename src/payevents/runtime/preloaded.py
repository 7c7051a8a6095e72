"""Imported last by the workers' fork server (:func:`payevents.runtime.procs.preload`): the server's heap — every
module it imported for the workers — is collected once and frozen (:func:`gc.freeze`) before the server forks
any worker.

A forked worker then starts with those objects already out of its collector's reach: its own
:func:`~payevents.runtime.heap.settle_heap` collects and freezes only what it allocated since the fork, instead of
visiting every object of every module again — which also wrote to each of them, so that the kernel copied the
worker's share of the server's pages one by one (copy-on-write). Not to be imported anywhere else: importing it
freezes the importing process's heap.
"""

from __future__ import annotations

import gc

gc.collect()
gc.freeze()
