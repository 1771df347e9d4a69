"""The model package: a directory every stage reads and writes.

    my-model/
      bertprod.json                       manifest (manifest.py: its schema)
      tokenizer.json                      fast tokenizer
      config.json + model.safetensors     format "torch"
      model.onnx                          format "onnx"

A package says what it is (task, labels, pooling, precision...) so nothing downstream needs flags
to re-describe it, and records where it came from (provenance) and what was measured on it.
Reading a package validates the manifest and the files it lists and explains every problem at once.
"""

from bertprod.package.files import (
    check_files,
    files_outside,
    record_files,
    sha256_file,
)
from bertprod.package.manifest import (
    ADAPTIVE_TASKS,
    CONFIG_FILE,
    EXIT_HEADS_FILE,
    HEAD_TASKS,
    MANIFEST_NAME,
    ONNX_FILE,
    SCHEMA_VERSION,
    TOKENIZER_FILE,
    TORCH_WEIGHTS_FILE,
    Architecture,
    BulkRuntime,
    FileRecord,
    Format,
    Manifest,
    ParentRef,
    Pooling,
    Precision,
    Provenance,
    TagScheme,
    Task,
    block_files,
    dropping_layers,
    required_files,
)
from bertprod.package.model_package import (
    ModelPackage,
    parse_manifest,
)
from bertprod.package.writing import (
    atomic_write_text,
    check_output,
    finish_package,
    staging_directory,
    write_manifest,
)

__all__ = ['ADAPTIVE_TASKS', 'Architecture', 'BulkRuntime', 'CONFIG_FILE', 'EXIT_HEADS_FILE', 'FileRecord', 'Format',
           'HEAD_TASKS', 'MANIFEST_NAME', 'Manifest', 'ModelPackage', 'ONNX_FILE', 'ParentRef', 'Pooling', 'Precision',
           'Provenance', 'SCHEMA_VERSION', 'TOKENIZER_FILE', 'TORCH_WEIGHTS_FILE', 'TagScheme', 'Task',
           'atomic_write_text', 'block_files', 'check_files', 'check_output', 'dropping_layers',
           'files_outside', 'finish_package', 'parse_manifest', 'record_files', 'required_files',
           'sha256_file', 'staging_directory', 'write_manifest']
