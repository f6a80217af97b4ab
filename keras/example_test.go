package keras_test

import (
	"log"

	"github.com/fwbench/fwbench/keras"
	"github.com/fwbench/fwbench/weights"
)

// Convert keras.applications' VGG16 weights to fwbench's canonical layout and
// back to a Keras 3 .weights.h5 (compile-only: it needs the files).
func Example() {
	ts, err := keras.Read("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
	if err != nil {
		log.Fatal(err)
	}
	// features.0.weight [64 3 3 3] (OIHW) ... features.28.bias [512]
	if err := weights.WriteSafetensors("vgg16_notop.safetensors", ts, nil); err != nil {
		log.Fatal(err)
	}
	// Importing keras also lets weights.Load read .h5 files.
	if _, err := weights.Load("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"); err != nil {
		log.Fatal(err)
	}
	// Back to Keras: model.load_weights("vgg16_notop.weights.h5") in
	// keras.applications.VGG16(include_top=False, weights=None).
	if err := keras.WriteWeightsH5("vgg16_notop.weights.h5", ts, keras.WriteOptions{}); err != nil {
		log.Fatal(err)
	}
}
