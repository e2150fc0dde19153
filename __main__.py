from stylezoo.core.cli import main

main()
