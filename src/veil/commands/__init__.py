"""The `veil` command's subcommands, one module per noun. Each module has `add_parser(commands)`,
which adds its subcommand and sets `handler`, a function of the parsed arguments returning the exit
status: 0 done, 1 a problem found or nothing found, 2 a usage error (argparse's own)."""
