from mailgateway.cli import main

main()
