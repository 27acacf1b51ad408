"""Where the tools find the repository's files (configs/, tools/, ...): the checkout that holds this
package (projects/DisCoDETR/disco_detr/tooling/paths.py, four folders below the root)."""
from ..model_zoo.catalog import REPO_ROOT

REPO = str(REPO_ROOT)
