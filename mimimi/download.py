from mimimi.data.download import main

if __name__ == "__main__":
    main()
