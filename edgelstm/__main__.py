from edgelstm.cli import main

main()
