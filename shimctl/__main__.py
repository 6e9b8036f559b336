from shimctl.cli.app import entry

entry()
