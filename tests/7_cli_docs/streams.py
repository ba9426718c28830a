"""Stand-ins for stderr in the progress tests: a terminal and a pipe (or file), told apart by isatty()."""

import io


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Pipe(io.StringIO):
    def isatty(self):
        return False
