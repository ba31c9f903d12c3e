from seedvr_cli.cli import main

main()
