"""The ingredients-spellcheck batch container: sharded input, correction engines, output."""

ENGINE_VERSION = "3"
