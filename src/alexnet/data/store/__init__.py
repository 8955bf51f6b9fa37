"""A prepared store (`alexnet prepare`): §2 applied once to any source, written in chunks that a
killed run resumes, with the training set's statistics summed in the same pass; and read back
as a source like any other."""
