<?php
// A panel API client in the style resellers copy from panels' API documentation: a class that
// POSTs `name=urlencode(value)` pairs with curl and decodes the JSON answer into objects.

class PanelClient
{
    public $api_url;
    public $api_key;

    public function __construct($api_url, $api_key)
    {
        $this->api_url = $api_url;
        $this->api_key = $api_key;
    }

    public function services()
    {
        return json_decode($this->connect(array('key' => $this->api_key, 'action' => 'services')));
    }

    public function order($data)
    {
        $post = array_merge(array('key' => $this->api_key, 'action' => 'add'), $data);
        return json_decode($this->connect($post));
    }

    public function status($order_id)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'status', 'order' => $order_id,
        )));
    }

    public function multiStatus($order_ids)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'status', 'orders' => implode(',', $order_ids),
        )));
    }

    public function cancel($order_ids)
    {
        return json_decode($this->connect(array(
            'key' => $this->api_key, 'action' => 'cancel', 'orders' => implode(',', $order_ids),
        )));
    }

    public function balance()
    {
        return json_decode($this->connect(array('key' => $this->api_key, 'action' => 'balance')));
    }

    private function connect($post)
    {
        $pairs = array();
        foreach ($post as $name => $value) {
            $pairs[] = $name . '=' . urlencode($value);
        }
        $ch = curl_init($this->api_url);
        curl_setopt($ch, CURLOPT_POST, 1);
        curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
        curl_setopt($ch, CURLOPT_HEADER, 0);
        curl_setopt($ch, CURLOPT_FOLLOWLOCATION, true);
        curl_setopt($ch, CURLOPT_POSTFIELDS, join('&', $pairs));
        curl_setopt($ch, CURLOPT_USERAGENT, 'Mozilla/4.0 (compatible; MSIE 5.01; Windows NT 5.0)');
        $result = curl_exec($ch);
        if (curl_errno($ch) != 0 && empty($result)) {
            $result = false;
        }
        curl_close($ch);
        return $result;
    }
}

// Drives every action the test needs and prints what came back, as JSON.
$api = new PanelClient($argv[1], $argv[2]);
$out = array();

$services = $api->services();
$out['first_service_is_integer_1'] = $services[0]->service === 1;
$out['rate'] = $services[0]->rate;
$out['balance_before'] = $api->balance()->balance;

$order = $api->order(array(
    'service' => 1, 'link' => 'https://www.tiktok.com/@php/video/7000000000000000001',
    'quantity' => 1000,
));
$out['order'] = $order->order;
$deadline = time() + 60;
do {
    $status = $api->status($order->order);
    if (in_array($status->status, array('Completed', 'Partial', 'Canceled'))) {
        break;
    }
    usleep(200000);
} while (time() < $deadline);
$out['status'] = $status;

$multi = $api->multiStatus(array($order->order, 987654));
$out['multi_known'] = $multi->{$order->order}->status;
$out['multi_unknown'] = $multi->{'987654'}->error;

$pending = $api->order(array(
    'service' => 2, 'link' => 'https://vm.tiktok.com/ZMphp42/', 'quantity' => 100,
));
$out['cancel'] = $api->cancel(array($pending->order, 987654));
$out['bad_link'] = $api->order(array(
    'service' => 1, 'link' => 'https://www.tiktok.com/@php', 'quantity' => 100,
))->error;
$out['balance_after'] = $api->balance()->balance;

echo json_encode($out), "\n";
