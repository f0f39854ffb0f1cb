from bananastand.client_cli import main

main()
