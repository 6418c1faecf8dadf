"""Files bertlab writes and reads: atomic outputs, the output-folder rule, damaged artefacts, logs,
and URLs.

Every room that writes or reads a user's files uses these, so a half-written output, a damaged
input or a run's TensorBoard events are handled in one place. `remote` is the one module that
talks to fsspec: object stores and other URLs (`s3://`, `gs://`, `hf://`, `https://`) for corpus
inputs, samples folders and run folders; is_remote, streamed open_read, glob, listing, exists,
a write probe, and one-line errors naming the URL.

May import: nothing else in bertlab.
"""
