# Type stubs for the part of ml-collections this repository uses (pyright reads
# typings/ first). ml-collections ships no types, and pyright's inference of its
# ConfigDict depends on the order it reads files in: a field's type came out as
# Any in one run and as a union of every value type in another. Here a field is Any.

from ml_collections.config_dict import ConfigDict as ConfigDict
from ml_collections.config_dict import FieldReference as FieldReference
from ml_collections.config_dict import FrozenConfigDict as FrozenConfigDict

__all__ = ("ConfigDict", "FieldReference", "FrozenConfigDict")
