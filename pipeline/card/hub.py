"""What the Hugging Face Hub accepts in a dataset card's YAML header.

`license` must be one of the Hub's licence ids. A blend mixes sources under several licences
(and machine-generated rows, which is not a licence at all), so a card of more than one
licence says `license: other` with a `license_name` and a `license_link` to the card's
Sources section, where each source's licence is listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Licence ids of the Hub (the subset a data blend is likely to name).
HUB_LICENSE_IDS = frozenset(
    {
        "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsd", "bsd-2-clause", "bsd-3-clause",
        "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
        "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0",
        "ecl-2.0", "epl-1.0", "epl-2.0", "eupl-1.1", "gfdl", "gpl", "gpl-2.0", "gpl-3.0",
        "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "mpl-2.0", "odc-by", "odbl", "openrail",
        "pddl", "unlicense", "gemma", "llama2", "llama3", "llama3.1", "unknown", "other",
    }
)  # fmt: skip
MIXED_LICENSE_NAME = "per-source"
MIXED_LICENSE_LINK = "README.md#sources"


def license_fields(licenses: Iterable[str]) -> dict[str, Any]:
    """`license` (and, when it is `other`, `license_name` and `license_link`) for the header."""
    distinct = sorted(set(licenses)) or ["unknown"]
    if len(distinct) == 1 and distinct[0] in HUB_LICENSE_IDS:
        return {"license": distinct[0]}
    return {
        "license": "other",
        "license_name": MIXED_LICENSE_NAME,
        "license_link": MIXED_LICENSE_LINK,
    }
