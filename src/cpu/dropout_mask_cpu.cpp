// Layer: CPU implementation. The dropout keep mask as bytes (cpu_dropout.hpp), for
// return_attn_probs and for tests: the forward's and backward's tiles are filled by the same
// dropout_keep_tile, so this is the mask they apply.
#include <algorithm>
#include <cstdint>

#include "cpu_dropout.hpp"

namespace flash_sigmoid::cpu_impl {

void dropout_mask(const DropoutParams& d, int64_t first_batch, int64_t batch, int64_t heads_q, int64_t seqlen_q,
                  int64_t seqlen_k, uint8_t* keep) {
  const int64_t per_head = seqlen_q * seqlen_k;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads_q; ++h) {
      uint8_t* head = keep + (b * heads_q + h) * per_head;
      if (!d.enabled()) {
        std::fill(head, head + per_head, uint8_t{1});
        continue;
      }
      const CpuDropout dropout{d, first_batch};
      dropout_keep_tile(d, dropout.bh(b, heads_q, h), 0, seqlen_q, 0, seqlen_k, head, seqlen_k, 1);
    }
  }
}

}  // namespace flash_sigmoid::cpu_impl
