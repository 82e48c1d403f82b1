from mmtok.cli.entry import main

main()
