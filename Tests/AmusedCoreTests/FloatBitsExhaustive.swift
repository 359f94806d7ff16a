// The branch-free half → float conversion the quantized kernels use agrees with the reference conversion on all
// 65,536 half values (NaN payloads included).

import AmusedCore
import Testing

@Test func vectorisableHalfConversionIsExactForEveryHalf() {
    for h in 0...UInt16.max {
        #expect(FloatBits.halfToFloatVectorisable(h).bitPattern == FloatBits.halfToFloat(h).bitPattern, "half \(h)")
    }
}
