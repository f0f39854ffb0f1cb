from bananastand.cli_client import main

main()
