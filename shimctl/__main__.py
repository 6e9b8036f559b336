from shimctl.cli import main

main()
