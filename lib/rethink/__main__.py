"""python -m rethink book run|build|all ... (the same as python -m rethink.book ...)."""
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "book":
        print("usage: python -m rethink book {run,build,all,profiles} ...", file=sys.stderr)
        return 2
    from .book import main as book_main
    return book_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
