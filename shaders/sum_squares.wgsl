// The sum of squares of a whole tensor, for the global gradient norm (SumSquaresProgram): one
// workgroup, each thread summing a strided share of the elements, then thread 0 adding the shares.
// One dispatch where the stock composition needs a square and a multi-pass reduction.

const WG : i32 = {{WG}};

var<workgroup> partial : array<f32, WG>;

// A flat program's entry point takes the global index; with one workgroup it is the lane.
fn main(index : i32) {
  let lane = index;
  var sum = 0.0;
  for (var i = lane; i < uniforms.count; i += WG) {
    let g = x[i];
    sum = fma(g, g, sum);
  }
  partial[lane] = sum;
  workgroupBarrier();
  if (lane == 0) {
    var total = 0.0;
    for (var k = 0; k < WG; k++) {
      total += partial[k];
    }
    setOutputAtIndex(0, total);
  }
}
