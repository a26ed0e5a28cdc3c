"""One module per CLI subcommand; see `fusionlab.cli` for the contract."""
