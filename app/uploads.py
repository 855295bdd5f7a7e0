"""The upload guard lives in the library (`pneumo.uploads`); this name is kept for the pages."""

from pneumo.uploads import (MAX_MEMBER_BYTES, MAX_MEMBERS, MAX_TOTAL_BYTES, Item, expand,
                            expand_zip, labelled_films)

__all__ = ["MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "Item", "expand", "expand_zip",
           "labelled_films"]
