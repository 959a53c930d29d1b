"""Pipeline stages: one module per stage, each exposing NAME, INPUTS, CONFIG, VERSION and run()."""
