"""Tables of documents -> documents: Parquet files, Arrow files, and `datasets.load_dataset`.

The readers behind prepare_corpus's `.parquet` and `.arrow` inputs (bertlab.corpus.inputs) and its
`--dataset` flag. Each row of a table is one document; its text column is split into paragraphs
on newlines, exactly as a JSON Lines document's "text" field is, so the same texts give the same
corpus from Parquet, Arrow, `datasets` or JSON Lines.

Decisions:
- Tables are read in batches of at most BATCH_ROWS rows, never whole: Parquet with
  `ParquetFile.iter_batches(batch_size=..., columns=[...])` (only the text and title columns are
  decoded), Arrow files record batch by record batch, `datasets` with `IterableDataset.iter`.
  Memory stays flat whatever the table's size (a whole Wikipedia is tens of GB of Parquet).
- `.arrow` files are read with pyarrow alone: the `data-0000N-of-0000M.arrow` files that
  `datasets.Dataset.save_to_disk` writes (beside `state.json` and `dataset_info.json`) are in
  Arrow's streaming format, so a saved dataset needs no `datasets` package to be read. The
  random-access file format (`.arrow` from other tools) is read too. A folder saved from a
  `DatasetDict` holds one subfolder a split; as with any input folder, all of them are read:
  name the split's folder to read one.
- The title is not part of the document unless asked for (`--title_column title`): the
  `wikimedia/wikipedia` text does not hold its title, and bertlab.corpus.wikipedia leaves titles and
  headings out of a dump's articles too (a title is not a sentence, and a document opening with
  it makes next-sentence pairs easy to guess). With `--title_column`, the title becomes the
  document's first line, a sentence of its own.
- pyarrow is a requirement of bertlab, but bertlab.corpus.inputs imports this module only when a
  table is read, so corpora from dumps and text need no pyarrow (the GPU check's image may lack it).
  `datasets` is optional (the `datasets` extra, `pip install -e ".[datasets]"`): only --dataset
  imports it, and without it that flag is a one-line error. Its builders need the network for a
  Hub name; a packaged builder on local files (`--dataset parquet --dataset_files
  'dir/*.parquet'`) does not, which is how its code path is tested. `streaming=True`: nothing is
  downloaded or converted to Arrow in the cache first, the rows are read as they are consumed.
- A Parquet file may be an fsspec URL (`s3://...`, `hf://datasets/...`, bertlab.files.remote):
  pyarrow reads it through the streamed file object, by ranges (the footer, then the row groups
  of the two columns), never a local copy. Arrow files are memory-mapped, so they must be local.
- Bad input is a one-line ValueError naming the file (or the --dataset) and the column: a missing
  column lists the columns there are; a column of another type than text names its type; a null
  value names its row, counted from 0 within the file (or the --dataset) as `datasets` indexes
  (`dataset[12]`). A damaged or truncated file, or one that is not Parquet or Arrow, names the
  file and pyarrow's reason, never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

from bertlab.files import remote

BATCH_ROWS = 1000  # rows turned into Python strings at a time: a few MB of Wikipedia text


def table_documents(
    path: Path | str,
    text_column: str = "text",
    title_column: str | None = None,
    progress: Any = None,
) -> Iterator[list[str]]:
    """Yield the documents of one `.parquet` or `.arrow` file; `progress` (tqdm) counts bytes.

    `path` may be a URL of a Parquet file (bertlab.files.remote)."""
    url = remote.is_remote(path)
    name = remote.name(path) if url else path.name
    if url and not name.lower().endswith(".parquet"):
        raise ValueError(f"{path}: Arrow files are memory-mapped and must be local; copy it here")
    reader = _parquet_batches if name.lower().endswith(".parquet") else _arrow_batches
    done = start = 0
    batches = reader(path, _columns(text_column, title_column))
    try:
        for batch, position in batches:
            columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
            yield from _rows(columns, str(path), text_column, title_column, start)
            start += batch.num_rows
            if progress is not None:
                progress.update(position - done)
                done = position
    finally:
        batches.close()
    if progress is not None:
        total = remote.size(str(path)) if url else path.stat().st_size
        progress.update(total - done)  # the footer, after the last batch


def dataset_documents(
    name: str,
    config: str | None = None,
    split: str = "train",
    data_files: list[str] | None = None,
    text_column: str = "text",
    title_column: str | None = None,
) -> Iterator[list[str]]:
    """Yield the documents of `datasets.load_dataset(name, config, split=split, streaming=True)`.

    `data_files` goes to load_dataset as is: local files or globs for a packaged builder such as
    `parquet`, `json` or `text`.
    """
    dataset = load_streaming_dataset(name, config, split, data_files)
    yield from iterable_documents(dataset, f"--dataset {name}", text_column, title_column)


def load_streaming_dataset(
    name: str, config: str | None, split: str, data_files: list[str] | None
) -> Any:
    """The streaming `datasets.IterableDataset`; a missing package or dataset is a ValueError."""
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"--dataset {name} needs the datasets package: pip install datasets"
        ) from None
    try:
        return datasets.load_dataset(
            name, config, split=split, data_files=data_files or None, streaming=True
        )
    except (OSError, ValueError) as error:
        # Not found, no such config or split, no network: datasets' own words, after ours.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--dataset {name}: cannot load it ({reason})") from None


def iterable_documents(
    dataset: Any, where: str, text_column: str = "text", title_column: str | None = None
) -> Iterator[list[str]]:
    """Yield the documents of a `datasets` (Iterable)Dataset, read BATCH_ROWS rows at a time."""
    start = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        yield from _rows(batch, where, text_column, title_column, start)
        start += len(next(iter(batch.values()), []))


def _columns(text_column: str, title_column: str | None) -> list[str]:
    return [title_column, text_column] if title_column else [text_column]


def _parquet_batches(path: Path | str, columns: list[str]) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Record batches of the columns, each with how many of the file's bytes it stands for."""
    url = remote.is_remote(path)
    stream = remote.open_read(str(path)) if url else None
    try:
        source = pq.ParquetFile(stream if url else path)
    except (pa.ArrowException, OSError) as error:
        if stream is not None:
            stream.close()
        raise _damaged(path, "Parquet", error) from None
    with contextlib.closing(source), stream if url else contextlib.nullcontext():
        _check_schema(source.schema_arrow, path, columns)
        size = remote.size(str(path)) if url else path.stat().st_size
        rows, done = max(source.metadata.num_rows, 1), 0
        batches = source.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as error:
                raise _damaged(path, "Parquet", error) from None
            if batch is None:
                return
            done += batch.num_rows
            yield batch, size * done // rows


def _arrow_batches(path: Path, columns: list[str]) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Record batches of an Arrow stream (save_to_disk's format) or file, cut to BATCH_ROWS."""
    try:
        source = pa.memory_map(str(path))
    except (pa.ArrowException, OSError) as error:
        raise _damaged(path, "Arrow", error) from None
    with source:
        try:
            batches = _ipc_batches(source)
            schema = next(batches)
        except (pa.ArrowException, OSError) as error:
            raise _damaged(path, "Arrow", error) from None
        _check_schema(schema, path, columns)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as error:
                raise _damaged(path, "Arrow", error) from None
            if batch is None:
                return
            # A memory-mapped batch costs nothing until its strings are made Python objects:
            # cut it so that at most BATCH_ROWS of them exist at a time.
            batch = batch.select(columns)
            for offset in range(0, batch.num_rows, BATCH_ROWS):
                yield batch.slice(offset, BATCH_ROWS), source.tell()


def _ipc_batches(source: pa.MemoryMappedFile) -> Iterator[Any]:
    """The schema, then each record batch: streaming format first, else the file format."""
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        file_reader = pa.ipc.open_file(source)
        yield file_reader.schema
        for index in range(file_reader.num_record_batches):
            yield file_reader.get_batch(index)
        return
    yield reader.schema
    yield from reader


def _check_schema(schema: pa.Schema, path: Path, columns: list[str]) -> None:
    for column in columns:
        if column not in schema.names:
            flag = "--text_column" if column == columns[-1] else "--title_column"
            raise ValueError(
                f"{path}: no column {column!r} ({flag}); its columns: {', '.join(schema.names)}"
            )
        kind = schema.field(column).type
        if not _is_text(kind):
            raise ValueError(f"{path}: column {column!r} holds {kind} values, not text")


def _is_text(kind: pa.DataType) -> bool:
    is_view = getattr(pa.types, "is_string_view", lambda _: False)  # pyarrow 16 and later
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)


def _rows(
    columns: dict[str, list],
    where: str,
    text_column: str,
    title_column: str | None,
    start: int,
) -> Iterator[list[str]]:
    for name in _columns(text_column, title_column):
        if name not in columns:
            flag = "--text_column" if name == text_column else "--title_column"
            raise ValueError(
                f"{where}: no column {name!r} ({flag}); its columns: {', '.join(columns)}"
            )
    texts = columns[text_column]
    titles = columns[title_column] if title_column else None
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(_not_text(where, start + index, text_column, text))
        if titles is None:
            yield text.split("\n")
            continue
        title = titles[index]
        if not isinstance(title, str):
            raise ValueError(_not_text(where, start + index, title_column, title))
        yield [title, *text.split("\n")]


def _not_text(where: str, row: int, column: str, value: object) -> str:
    found = "null" if value is None else f"a {type(value).__name__}"
    return f"{where}: row {row}: column {column!r} is {found}, not a string"


def _damaged(path: Path, kind: str, error: Exception) -> ValueError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"{path}: not a readable {kind} file, damaged or truncated ({reason})")
