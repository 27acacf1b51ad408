"""The DisCo DETR model zoo: named checkpoints that load into our detectors in one line.

    train.init_checkpoint=zoo://detrex/conditional_detr_r50_50ep      # LazyConfig override
    from disco_detr import model_zoo
    model_zoo.list_models(); model_zoo.get_checkpoint_url(name); cfg = model_zoo.get_config(name)
    local_file = model_zoo.resolve(name)                               # download + convert + cache

``zoo://`` is registered with detectron2's ``PathManager`` on import (like ``detectron2://``).
See :mod:`.catalog` (entries, the cache folder), :mod:`.resolver` (download, convert, cache; offline use),
:mod:`.download` (checked, resumable downloads) and :mod:`.layouts` (conversion by source layout, running
:mod:`disco_detr.convert`). Imports go one way: resolver -> layouts -> catalog.
"""
from .catalog import (
    LAYOUTS,
    ZooEntry,
    builtin_entries,
    cache_root,
    catalog,
    get_config_file,
    get_entry,
    list_models,
    register_entry,
)
from .download import ChecksumError, DownloadError
from .layouts import MissingConverterError, ZooConversion, check_converter
from .load_report import check_against_model
from .resolver import (
    PREFIX,
    ZooOfflineError,
    ZooPathHandler,
    conversion_report,
    converted_path,
    download_path,
    get_checkpoint_url,
    get_config,
    is_zoo_path,
    register_handler,
    resolve,
    resolve_for_load,
)

register_handler()

__all__ = ["LAYOUTS", "PREFIX", "ChecksumError", "DownloadError", "MissingConverterError", "ZooConversion", "ZooEntry",
           "ZooOfflineError", "ZooPathHandler", "builtin_entries", "cache_root", "catalog", "check_against_model",
           "check_converter", "conversion_report", "converted_path", "download_path", "get_checkpoint_url", "get_config",
           "get_config_file", "get_entry", "is_zoo_path", "list_models", "register_entry", "resolve", "resolve_for_load"]
