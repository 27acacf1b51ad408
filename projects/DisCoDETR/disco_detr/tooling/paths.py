"""Where the tools find the repository's files (configs/, tools/, ...): the checkout that holds this
package (projects/DisCoDETR/disco_detr/tooling/paths.py, four folders below the root)."""
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[4])
