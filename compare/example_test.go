package compare_test

import (
	"errors"
	"fmt"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/recipe"
)

// A Spec's recipe is checked by recipe.Config.Validate alone: Spec.Validate returns its error
// as it is, and the error is a compare.ErrInvalid too.
func ExampleSpec_Validate() {
	s := compare.DefaultSpec()
	s.Model, s.LR = "resnet50", 0
	err := s.Validate()
	fmt.Println(err)
	fmt.Println(errors.Is(err, compare.ErrInvalid), err.Error() == s.Config.Validate().Error())
	// Output:
	// recipe: invalid configuration: learning rate 0: want a positive number
	// true true
}

// The recipe a run record carries: the recipe's own keys (recipe.Config.Map, resolved) and
// what the Spec adds.
func ExampleSpec_Recipe() {
	s := compare.DefaultSpec()
	s.Model, s.Optimizer = "mobilenet_v2", recipe.SGD
	r := s.Recipe(2)
	fmt.Println(r["model"], r["head"], r["hidden"], r["optimizer"], r["momentum"], r["threads"], r["batch_size"], r["epochs"])
	// Output: mobilenet_v2 torchvision 0 sgd 0.9 2 16 6
}
