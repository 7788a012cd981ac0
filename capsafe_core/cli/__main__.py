from capsafe_core.cli import main

main()
