// 1.0 when every element of a, b and c (one variable's new value and moments, all the same size) is
// finite, else 0.0 (AllFiniteProgram). Finiteness is read from the bits, exponent not all ones, because
// WGSL lets a compiler assume that arithmetic never meets Inf or NaN, so x - x == 0 proves nothing.
// One workgroup: each thread checks a strided share, then thread 0 combines the shares.

const WG : i32 = {{WG}};

var<workgroup> partial : array<u32, WG>;

fn finite(x : f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// A flat program's entry point takes the global index; with one workgroup it is the lane.
fn main(index : i32) {
  let lane = index;
  var ok = 1u;
  for (var i = lane; i < uniforms.count; i += WG) {
    if (!(finite(a[i]) && finite(b[i]) && finite(c[i]))) {
      ok = 0u;
    }
  }
  partial[lane] = ok;
  workgroupBarrier();
  if (lane == 0) {
    var all = 1u;
    for (var k = 0; k < WG; k++) {
      all = min(all, partial[k]);
    }
    setOutputAtIndex(0, f32(all));
  }
}
