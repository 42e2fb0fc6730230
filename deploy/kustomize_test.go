// Rendering the Kubernetes kustomizations with kustomize's own engine (krusty, the library
// behind `kubectl apply -k`), so that the checks see what a cluster would get: overlays
// applied, patches merged, and a kustomization kustomize refuses (a base that contains its
// overlay, a patch that matches nothing) failing the test.
package deploy

import (
	"encoding/json"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizations are the directories a user applies with kubectl apply -k.
var kustomizations = []string{"k8s", "k8s/base", "k8s/monitoring", "k8s/tls"}

// kustomize renders dir and returns its documents, under the key dir, as generic JSON values
// (map[string]any, []any, string, float64, bool, nil), as loadYAML returns them.
func kustomize(t *testing.T, dir string) manifests {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var docs []any
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, v)
	}
	return manifests{dir: docs}
}
