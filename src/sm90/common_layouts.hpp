// Layer: sm90. The shared-memory layouts that the Hopper traits build their tiles from: a tile of
// 128-byte-swizzled rows, and the transposed view through which a product reads such a tile the
// other way round.
//
// Owns: how a tile's rows are stored and how it is seen transposed. Does not own: any tile's
// extents or buffer (fwd_traits.hpp, bwd_traits.hpp choose them; SharedStorage aligns them to 1 KiB).
#pragma once

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

namespace flash_sigmoid::sm90 {

// A (rows, cols[, depth]) tile of Element in 128-byte-swizzled rows: the GMMA canonical K-major
// SW128 atom (8 rows x 64 two-byte elements, 1 KiB) repeated over the tile. Written row-major, as
// rows arrive from global memory.
template <class Element, int... kExtents>
using RowsLayout = decltype(cute::tile_to_shape(cute::GMMA::Layout_K_SW128_Atom<Element>{},
                                                cute::Shape<cute::Int<kExtents>...>{}));

// The (cols, rows[, depth]) view of a (rows, cols[, depth]) tile: element (c, r, d) of the view is
// element (r, c, d) of the tile. A K-major SW128 tile of (rows, cols) is also an MN-major SW128
// tile of (cols, rows), so a product can read one buffer as either operand order.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto transposed_view(Layout const& tile) {
  using namespace cute;
  auto rows = size<0>(tile);
  auto cols = size<1>(tile);
  if constexpr (decltype(rank(tile))::value == 2) {
    return composition(tile, make_layout(make_shape(cols, rows), make_stride(rows, _1{})));
  } else {
    static_assert(decltype(rank(tile))::value == 3, "(rows, cols) or (rows, cols, depth)");
    return composition(tile, make_layout(make_shape(cols, rows, size<2>(tile)), make_stride(rows, _1{}, rows * cols)));
  }
}
template <class Layout>
using TransposedLayout = decltype(transposed_view(Layout{}));

}  // namespace flash_sigmoid::sm90
