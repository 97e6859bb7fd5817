"""The simplified x86-64 core (docs/core.md): ALU, decoder, and (later) the pipeline."""
