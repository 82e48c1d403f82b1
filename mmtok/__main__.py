from mmtok.cli.app import main

main()
