"""Files bertlab writes and reads: atomic outputs, the output-folder rule, damaged artefacts, logs.

Every room that writes or reads a user's files uses these, so a half-written output, a damaged
input or a run's TensorBoard events are handled in one place.

May import: nothing else in bertlab.
"""
