"""Low-rank tensor attention for SAM / SAM2 mask decoders (BALR-SAM's decoder part; the factorisation is ours).

Each head h of a decoder attention layer is a pair of bilinear forms on the input width d:

* the score form ``M_qk[h] = W_q[h]ᵀ W_k[h]`` (``d_q × d_kv``): score(x, y) = xᵀ M_qk[h] y / √d_head;
* the value-output form ``M_vo[h] = W_o[h] W_v[h]`` (``d × d_kv``): the head's contribution to the output.

Stacked over heads they form two 3-way tensors ``H × d × d_kv``. :class:`LowRankTensorAttention` stores a Tucker-2
style factorisation of both with one **key-side factor per head shared by the score and the value-output form**
(``S[h]``, ``r × d_kv``): the keys and the values are projected by the same ``S[h]``, the queries by ``A[h]`` and the
output by ``D[h]``, so that ``A[h]ᵀ S[h] ≈ M_qk[h]`` and ``D[h] S[h] ≈ M_vo[h]``. Every head then scores and
aggregates in width r instead of d_head: the query, key and value activations (4,096 image tokens for a 64×64
embedding) and the weights shrink by ``1 − r / d_head`` (75% at the default ``r = d_head / 4``).

The factors start from the pretrained weights: ``S[h]`` spans the dominant right singular subspace of the two
stacked, norm-balanced forms, and ``A[h]``, ``D[h]`` are the least-squares completions for that ``S[h]``. Biases are
folded exactly: the key bias only adds a per-query constant to the scores (cancelled by the softmax); the query bias
acts through ``S[h]`` as a query-side bias; the value bias adds the constant ``W_o[h] b_v[h]`` (attention weights sum
to one) and moves into the output bias. With ``rank = 2·d_head`` (``share_key_value=True``) or ``rank = d_head``
(``False``, separate key and value factors) the layer equals the dense one up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LowRankTensorAttention", "is_decoder_attention", "replace_decoder_attention"]


def is_decoder_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a SAM / SAM2 / LiteMedSAM mask-decoder ``Attention`` (q/k/v/out projections + heads)."""
    return all(hasattr(module, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads")) and isinstance(
        module.q_proj, nn.Linear
    )


class LowRankTensorAttention(nn.Module):
    """Multi-head attention whose heads score and aggregate in a low rank r.

    Computes, for queries ``q`` (``B×Nq×d``), keys ``k`` and values ``v`` (``B×Nk×d_kv``)::

        out = out_proj( Σ_h softmax((A_h q + a_h)(S_h k)ᵀ / √d_head) · S_h v )

    with ``A_h``, ``S_h`` of shape ``r × d``; ``forward(q, k, v)`` has the signature of the decoder attention it
    replaces and returns ``B×Nq×d``.

    Args:
        embedding_dim: query and output width d.
        kv_dim: key and value input width.
        num_heads: H.
        rank: per-head width r.
        head_dim: d_head of the dense layer this one approximates (sets the 1/√d_head score scale, so a converted
            layer keeps the pretrained softmax temperature).
        share_key_value: one factor per head for keys and values (default); False keeps two.
        dropout: attention dropout in training (SAM2's decoder attention has the option; SAM's has none).
    """

    def __init__(
        self,
        embedding_dim: int,
        kv_dim: int,
        num_heads: int,
        rank: int,
        head_dim: int,
        share_key_value: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.embedding_dim, self.kv_dim, self.num_heads, self.rank = embedding_dim, kv_dim, num_heads, rank
        self.head_dim = head_dim
        self.share_key_value = share_key_value
        self.dropout_p = dropout
        width = num_heads * rank
        self.q_proj = nn.Linear(embedding_dim, width)
        # the key bias cannot change the softmax and the value bias is folded into the output bias: none kept
        self.k_proj = nn.Linear(kv_dim, width, bias=False)
        self.v_proj = None if share_key_value else nn.Linear(kv_dim, width, bias=False)
        self.out_proj = nn.Linear(width, embedding_dim)

    @property
    def full_rank(self) -> int:
        """The rank at which the factorisation is exact for any dense layer."""
        return 2 * self.head_dim if self.share_key_value else self.head_dim

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.rank).transpose(1, 2)  # B×H×N×r

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        value_proj = self.k_proj if self.v_proj is None else self.v_proj
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(value_proj(v))
        # SDPA scales by 1/√r by default; the pretrained forms were trained with 1/√d_head
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_p if self.training else 0.0, scale=1.0 / math.sqrt(self.head_dim)
        )
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.rank))

    @classmethod
    @torch.no_grad()
    def from_dense(
        cls, dense: nn.Module, rank: int | None = None, share_key_value: bool = True
    ) -> LowRankTensorAttention:
        """Factorise a pretrained decoder ``Attention`` (see the module docstring).

        Args:
            dense: a SAM / SAM2 / LiteMedSAM decoder attention (``is_decoder_attention``).
            rank: per-head rank r (default ``d_head // 4``: a 75% narrower attention).
            share_key_value: see the class.
        """
        if not is_decoder_attention(dense):
            raise TypeError(f"{type(dense).__name__} is not a decoder attention with q/k/v/out projections")
        heads = dense.num_heads
        internal = dense.q_proj.out_features
        head_dim = internal // heads
        rank = max(1, head_dim // 4) if rank is None else int(rank)
        d, d_kv = dense.q_proj.in_features, dense.k_proj.in_features
        layer = cls(
            d, d_kv, heads, rank, head_dim, share_key_value=share_key_value, dropout=getattr(dense, "dropout_p", 0.0)
        ).to(dense.q_proj.weight)
        if dense.q_proj.weight.is_meta:
            return layer  # a shape-only build (parameter accounting of large backbones): nothing to factorise
        # factorise in float64: tiny singular values of the products would otherwise lose the exactness at full rank
        wq, wk, wv, wo = (p.weight.double() for p in (dense.q_proj, dense.k_proj, dense.v_proj, dense.out_proj))
        bq, bv = dense.q_proj.bias.double(), dense.v_proj.bias.double()
        a_rows, a_bias, s_rows, v_rows, d_cols = [], [], [], [], []
        for h in range(heads):
            sl = slice(h * head_dim, (h + 1) * head_dim)
            m_qk = wq[sl].T @ wk[sl]  # d × d_kv
            m_vo = wo[:, sl] @ wv[sl]  # d × d_kv
            if share_key_value:
                # the key-side subspace that serves both forms, each weighted equally whatever its scale
                stacked = torch.cat([m_qk / m_qk.norm().clamp_min(1e-12), m_vo / m_vo.norm().clamp_min(1e-12)])
                s = _top_right_singular_vectors(stacked, rank)  # r × d_kv, orthonormal rows
                v_side = s
            else:
                s = _top_right_singular_vectors(m_qk, rank)
                v_side = _top_right_singular_vectors(m_vo, rank)
            s_rows.append(s)
            v_rows.append(v_side)
            a_rows.append(s @ m_qk.T)  # A_h with A_hᵀ S_h = M_qk Sᵀ S (the projection of M_qk onto S)
            a_bias.append(s @ (wk[sl].T @ bq[sl]))  # the query bias' key-dependent term bqᵀ W_k y, through S
            d_cols.append(m_vo @ v_side.T)  # D_h = M_vo Vᵀ
        layer.q_proj.weight.copy_(torch.cat(a_rows))
        layer.q_proj.bias.copy_(torch.cat(a_bias))
        layer.k_proj.weight.copy_(torch.cat(s_rows))
        if layer.v_proj is not None:
            layer.v_proj.weight.copy_(torch.cat(v_rows))
        layer.out_proj.weight.copy_(torch.cat(d_cols, dim=1))
        layer.out_proj.bias.copy_(dense.out_proj.bias.double() + wo @ bv)
        return layer


def _top_right_singular_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading right singular vectors of ``matrix`` as orthonormal rows (``rank × columns``); when
    ``rank`` exceeds the matrix's rank the remaining rows are further orthonormal directions."""
    if rank > matrix.shape[1]:
        raise ValueError(f"rank {rank} exceeds the input width {matrix.shape[1]}")
    # eigenvectors of the small Gram matrix MᵀM (float64) instead of an SVD of M: LAPACK's SVD drivers (numpy's and
    # torch's) took 0.1-5 s per 512×256 matrix on 2 busy CPU cores, the symmetric eigensolver a few milliseconds
    gram = matrix.detach().double().cpu().numpy()
    _, vectors = np.linalg.eigh(gram.T @ gram)  # ascending eigenvalues
    return torch.from_numpy(vectors[:, ::-1][:, :rank].T.copy()).to(matrix.device)


def replace_decoder_attention(decoder: nn.Module, rank: int | None = None, share_key_value: bool = True) -> list[str]:
    """Replace every attention layer of a mask decoder's two-way transformer by its :class:`LowRankTensorAttention`
    factorisation, in place.

    Args:
        decoder: a SAM / SAM2 / LiteMedSAM mask decoder (its ``transformer`` is searched).
        rank: per-head rank (default ``d_head // 4`` per layer).
        share_key_value: see :class:`LowRankTensorAttention`.

    Returns:
        the dotted names (relative to ``decoder``) of the replaced layers.
    """
    names = [f"transformer.{n}" for n, m in decoder.transformer.named_modules() if n and is_decoder_attention(m)]
    if not names:
        raise ValueError(f"no decoder attention layer found in {type(decoder).__name__}.transformer")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = decoder.get_submodule(parent_name)
        setattr(parent, child, LowRankTensorAttention.from_dense(getattr(parent, child), rank, share_key_value))
    return names
