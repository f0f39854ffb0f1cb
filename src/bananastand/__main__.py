from bananastand.cli import main

main()
