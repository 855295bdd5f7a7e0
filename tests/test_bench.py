"""The serving benchmark's yardstick: the chip's int8 limit depends on the instructions it has."""

from __future__ import annotations

import pytest

from pneumo.bench import int8_limit_ms_per_view


def test_int8_limit_with_vnni_is_the_guides_3_ms_on_two_cores_and_scales_with_cores():
    assert int8_limit_ms_per_view(2, {"avx2", "avx512_vnni"}, 2445.0) == pytest.approx(3.0)
    assert int8_limit_ms_per_view(4, {"avx2", "avx_vnni"}, 2445.0) == pytest.approx(1.5)


def test_int8_limit_without_vnni_is_the_fp32_fma_rate():
    # 4.1 GFLOP / (2 cores x 32 FLOP a cycle x 2.445 GHz) = 26.2 ms: int8 on AVX2 gains nothing
    assert int8_limit_ms_per_view(2, {"avx2", "fma"}, 2445.0) == pytest.approx(26.2, abs=0.05)
    assert int8_limit_ms_per_view(1, {"avx2", "fma"}, 2445.0) == pytest.approx(52.4, abs=0.1)
