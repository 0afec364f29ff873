"""Pure renderers: custom resources (plus what they reference) in, complete desired objects out. No I/O."""
