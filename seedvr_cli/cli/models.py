"""``seedvr models ...``: the registry of published checkpoints. (Filled in by the weights work.)"""
