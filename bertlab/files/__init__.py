"""Files bertlab writes and reads: atomic outputs, the one output-folder rule, damaged artefacts.

Every room that writes or reads a user's files uses these, so a half-written output or a damaged
input is handled in one place.

May import: nothing else in bertlab.
"""
