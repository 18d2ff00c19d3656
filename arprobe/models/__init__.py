"""Building and loading models: text (GPT-NeoX presets, hub / path / ladder), vision, and the
TransformerLens names and hooks every recording and probe uses."""
