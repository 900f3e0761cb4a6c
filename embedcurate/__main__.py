from embedcurate.cli import main

main()
