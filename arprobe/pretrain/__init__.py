"""`arprobe pretrain`: a small GPT-NeoX ladder pre-trained offline, saved like the hub saves Pythia.

``corpus``: the pre-training text, disjoint from the fine-tuning documents. ``ladder``: the sizes,
the settings, the checkpoint steps and the folder layout. ``train``: the training loop, resumable.
"""
