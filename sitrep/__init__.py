"""The `sitrep` command line: one entry point whose subcommands live in the job packages."""
