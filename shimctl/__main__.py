from shimctl.cli import entry

entry()
