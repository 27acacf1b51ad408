"""The DisCo DETR model zoo: named checkpoints that load into our detectors in one line.

    train.init_checkpoint=zoo://detrex/conditional_detr_r50_50ep      # LazyConfig override
    from disco_detr import model_zoo
    model_zoo.list_models(); model_zoo.get_checkpoint_url(name); cfg = model_zoo.get_config(name)
    local_file = model_zoo.resolve(name)                               # download + convert + cache

``zoo://`` is registered with detectron2's ``PathManager`` on import (like ``detectron2://``).
See :mod:`.catalog` (entries), :mod:`.resolver` (cache, offline use), :mod:`.download` (checked,
resumable downloads) and :mod:`.layouts` (conversion by source layout).
"""
from .catalog import LAYOUTS, ZooEntry, builtin_entries, catalog, get_entry, list_models, register_entry
from .download import ChecksumError, DownloadError
from .layouts import MissingConverterError, ZooConversion, check_converter
from .load_report import check_against_model
from .resolver import (
    PREFIX,
    ZooOfflineError,
    ZooPathHandler,
    cache_root,
    conversion_report,
    converted_path,
    download_path,
    get_checkpoint_url,
    get_config,
    get_config_file,
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
