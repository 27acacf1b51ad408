"""The logic of tools/convert/: command lines over the key-layout converters of :mod:`disco_detr.convert`."""
